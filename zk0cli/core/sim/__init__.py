"""zk0's MuJoCo SO-101 simulator (placeholder, filled in below)."""
