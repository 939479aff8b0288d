"""Buildpacks (the Heroku v2 contract) arrive with the build issue."""
