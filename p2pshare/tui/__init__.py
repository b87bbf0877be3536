"""The Textual app. It talks to a node only through a control client, never to node code."""
