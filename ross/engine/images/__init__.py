# -*- test-case-name: ross.test.integration.test_images -*-
"""
Local images: references, manifests and configs, image records, unpacking
into snapshots, import, load and save.
"""
