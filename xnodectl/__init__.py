"""xnodectl: declarative NixOS provisioning for Xnodes."""

__version__ = "0.1.0"
