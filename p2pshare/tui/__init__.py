"""The Textual terminal UI. It talks to a node only through a control client, never to node code.

``launch`` finds or starts the node; ``app`` holds the connection, the keys and the live batch
(``live`` coalesces pushed events); ``base`` is what screens need of the app. One module per
screen: ``feed``, ``document``, ``search``, ``peers``, ``communities``, ``transfers``, ``shares``
(my shares and the share form), ``profile``; ``dialogs`` holds prompts, welcome and help;
``recordlist`` is the virtual list every record list uses; ``records`` turns views into text.
"""
