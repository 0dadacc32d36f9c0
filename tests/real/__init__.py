"""Tests of kdreal: the real engine, its rendezvous and the Soft-RoCE testbed."""
