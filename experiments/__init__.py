"""Entry-point plumbing: build objects from the Hydra config and run the requested tasks."""
