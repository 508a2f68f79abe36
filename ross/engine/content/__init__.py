# -*- test-case-name: ross.test.test_content -*-
"""
The content store: blobs addressed by their digest, verified before they
become visible.
"""
