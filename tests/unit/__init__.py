"""Unit tests of driftguard's pure modules: no server, no network, a few seconds in all."""
