"""toynic: an out-of-tree hilkit NIC, the invented TN4 SPI chip with a 4-frame receive
buffer: its driver (``toynic.driver``), its register-level model as a ``kind = "python"``
bus factory (``toynic.model``) and its registration (``toynic.nic``)."""
