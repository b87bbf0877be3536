"""The Textual terminal UI. It talks to a node only through a control client, never to node code.

``launch`` finds or starts the node and connects; ``client`` is the little the app needs of a
connection (tests hand it a fake); ``records`` turns record views into lines; ``screens`` holds
the document, search, transfers, peers, communities and form screens; ``app`` ties them together.
"""
