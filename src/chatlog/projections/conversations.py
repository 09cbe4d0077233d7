"""Conversation read models: projects, threads (the conversation list), messages."""
