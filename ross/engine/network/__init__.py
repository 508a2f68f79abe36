# -*- test-case-name: ross.test.integration.test_network -*-
"""
Container networking: bridges, veth pairs, IPAM, nftables rules, published
ports and the embedded DNS of user-defined networks (SPEC 9).
"""
