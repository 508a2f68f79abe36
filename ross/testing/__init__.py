"""
Fixtures and verified fakes shared by Ross's tests (and benchmarks).
"""
