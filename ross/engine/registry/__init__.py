# -*- test-case-name: ross.test.integration.test_registry -*-
"""
Registries: pull and push over the OCI distribution spec (treq), with
docker's authentication and TLS rules.
"""
