"""Video data: the TECO episode format (DMLab / Minecraft), Moving MNIST from the shipped MNIST digits."""
