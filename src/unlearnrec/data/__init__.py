"""Data layer: readers, the dataset registry, splits, the synthetic generator and deletion requests."""

from unlearnrec.data.download import ChecksumError, DownloadError, download_dataset
from unlearnrec.data.errors import DataFormatError, UnknownDatasetError
from unlearnrec.data.formats import read_csv, read_lightgcn, read_recbole, write_lightgcn
from unlearnrec.data.interactions import Interactions, as_pairs, pair_keys, user_item_matrix
from unlearnrec.data.registry import (
    DATASETS,
    DatasetSpec,
    FileSpec,
    dataset_info,
    list_datasets,
    load_dataset,
    register_dataset,
    resolve_data_root,
)
from unlearnrec.data.splits import carve_validation, split_per_user
from unlearnrec.data.synthetic import make_synthetic

__all__ = [
    "DataFormatError",
    "UnknownDatasetError",
    "Interactions",
    "as_pairs",
    "pair_keys",
    "user_item_matrix",
    "ChecksumError",
    "DownloadError",
    "download_dataset",
    "read_csv",
    "read_lightgcn",
    "read_recbole",
    "write_lightgcn",
    "DATASETS",
    "DatasetSpec",
    "FileSpec",
    "dataset_info",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "resolve_data_root",
    "carve_validation",
    "split_per_user",
    "make_synthetic",
]
