"""The engine of the entry points, one module per job: `train` (the training and validation-loss loops, optimiser,
batches), `warmup` (the warm-up stage), `checkpoint` (a run's files in `--output_dir`), `signals` (stopping
cleanly), `inference` (the model loaded for inference, frames, masks over clips and videos) and `middle_frame`
(the A2D/JHMDB protocol). Import from the module that holds a name; this package imports nothing itself."""
