"""Robot imitation with memory: a simulated fruit-swap table on MuJoCo, its scripted expert and demonstrations."""
