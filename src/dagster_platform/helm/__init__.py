"""The platform on Kubernetes: merged Helm values, the instance derivation, policy checks, the helm CLI."""
