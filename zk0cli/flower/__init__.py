"""Flower ServerApp and ClientApp: thin adapters over :mod:`zk0cli.core`."""
