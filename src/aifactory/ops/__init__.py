"""Operations: the node as a service, backup and restore, model and application updates."""
