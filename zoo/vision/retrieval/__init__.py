"""Text-video retrieval: X-Pool and the mean-pooling baseline on CLIP.

- :mod:`.models`: ``xpool_vit_b32``, ``xpool_vit_b16``, ``meanpool_vit_b32`` (CLIP backbone + pooling head);
- :mod:`.data`: ``VideoRetrievalDataModule`` (MSR-VTT, MSVD, LSMDC in their own files; an offline
  generator of synthetic mp4 videos in the MSR-VTT layout), frame sampling and CLIP transforms;
- :mod:`.module`: ``TextVideoRetrieval`` (symmetric InfoNCE, two learning rates, chunked evaluation);
- :mod:`.metrics`: ``retrieval_metrics``, ``chunked_similarity``, ``dual_softmax``;
- :mod:`.figures`: the top-5 videos and frame-attention figure written after ``test``.

Importing this package imports nothing heavy; ``zoo.create_model`` imports ``.models`` on demand.
"""
