"""Training samples/s and peak memory of phases 2 and 3 against a default Hugging Face Trainer.

    python benchmarks/train_speed.py            # XLM-R Large size, random weights (GPU)
    python benchmarks/train_speed.py --tiny     # tiny model, runs on CPU in seconds

See transferstats.train.benchmark for what is measured.
"""

from transferstats.train.benchmark import main

if __name__ == "__main__":
    main()
