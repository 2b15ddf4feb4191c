"""The edges: discovering and decoding input images, writing outputs atomically, the model hub."""
