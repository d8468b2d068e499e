"""Engines that run the zk0 Flower app: simulation, deployment and the tiny smoke run."""
