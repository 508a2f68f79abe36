"""
Local images: references, manifests and configs, image records, unpacking
into snapshots, import, load and save.
"""
