"""The cold-start ranker: ID vocabularies warm-started from content, trained under Lightning.

Modules: model (towers, dedup, losses), tables (hashed IDs, row-wise Adagrad), semantic_ids
(residual k-means codes), data (split -> rows, requests), train (build + plain loop), lit
(LightningModule, DataModule, export writer), metrics (full-ranking Recall/NDCG, AUC) and
methods (train and score every baseline and our method on a split: the experiment's API).
Heavy imports (torch, lightning, faiss) happen in those modules, not here.
"""
