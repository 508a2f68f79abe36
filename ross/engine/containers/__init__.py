"""
Containers: records, names, configuration merging, persistence, and the
manager that drives their lifecycle through the runtime.
"""
