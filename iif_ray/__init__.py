"""iif-ray: influence-filtered PPO (IIF) and local data attribution on Ray RLlib."""

__version__ = "0.1.0"
