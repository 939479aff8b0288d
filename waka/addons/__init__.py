"""Add-ons: the catalogue of services and plans, and the interface their providers fill."""
