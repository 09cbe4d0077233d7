"""Workflow read model: state, deadline and history of each workflow."""
