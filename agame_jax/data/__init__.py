"""Data: dataset readers (DAVIS, YouTube-VOS, TFDS), synthetic and SynthVOS videos, the
training clip recipe and the grain input pipeline."""
