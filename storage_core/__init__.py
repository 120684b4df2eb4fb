"""Storage service core: models, services, blueprints, schemas and the location plugin interface."""
