"""dfl_ray: decentralized, blockchain-based federated learning on Ray."""

__version__ = "0.1.0"
