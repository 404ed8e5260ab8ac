"""driftguard: an Environment is the single source of truth for a set of Kubernetes objects."""
