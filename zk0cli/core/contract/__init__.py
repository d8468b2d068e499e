"""Typed records that travel between zk0 processes and phases (the run contract)."""
