"""Utilization of an embedding space (the metric introduced with Metrix).

How much of the embedding space the training set covers, seen from held-out queries: the mean
distance from each query embedding to its nearest training embedding. Mixup for metric learning
(Metrix) is claimed to lower it (test examples fall closer to training examples). A diagnostic
metric, differentiable but not meant as a training loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lossjax.losses.metric import _embeddings, _l2_normalize, _row_mask, _safe_sqrt

__all__ = ["embedding_utilization"]

_HI = jax.lax.Precision.HIGHEST


def embedding_utilization(
    query_embeddings: ArrayLike,
    train_embeddings: ArrayLike,
    *,
    normalize: bool = True,
    squared: bool = False,
    where_query: ArrayLike | None = None,
    where_train: ArrayLike | None = None,
) -> jax.Array:
    r"""Metrix utilization: mean distance from a query to its nearest training embedding.

    .. math::
        u(Q) = \frac{1}{|Q|}\sum_{q\in Q}\ \min_{x\in X}\ \big\lVert f(q) - f(x)\big\rVert_2

    over query (test) embeddings ``Q`` and training embeddings ``X`` (Venkataramanan et al. 2022,
    Sec. 5, "utilization"; lower means the training examples cover the space the queries use).
    Embeddings are L2-normalised first (``normalize=True``, as the paper's embeddings are);
    ``squared=True`` uses the squared distance. The nearest neighbour excludes training rows
    masked by ``where_train``; masked queries do not count (an empty side gives 0).

    Reference: S. Venkataramanan, B. Psomas, E. Kijak, L. Amsaleg, K. Karantzalos, Y. Avrithis,
    "It Takes Two to Tango: Mixup for Deep Metric Learning", ICLR 2022, arXiv:2106.04990.

    Args:
      query_embeddings: floating ``[Q, D]``.
      train_embeddings: floating ``[N, D]``.
      normalize: L2-normalise both sets first.
      squared: use ``‖·‖²`` instead of ``‖·‖``.
      where_query: optional bool ``[Q]``.
      where_train: optional bool ``[N]``.

    Returns:
      A scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> x = jnp.array([[1.0, 0.0], [-1.0, 0.0]])
      >>> round(float(embedding_utilization(q, x)), 5)   # (0 + √2) / 2
      0.70711
    """
    q = _embeddings(query_embeddings, False, "query_embeddings")
    x = _embeddings(train_embeddings, False, "train_embeddings")
    if q.shape[1] != x.shape[1]:
        raise ValueError(
            f"`train_embeddings` must have the dimension of `query_embeddings` ({q.shape[1]}), got {x.shape[1]}."
        )
    dtype = jnp.promote_types(q.dtype, x.dtype)
    q, x = q.astype(dtype), x.astype(dtype)
    mq = _row_mask(where_query, q.shape[0], "where_query")
    mx = _row_mask(where_train, x.shape[0], "where_train")
    # rows that do not count are replaced before any arithmetic (no NaN reaches the gradient)
    q = jnp.where(mq[:, None], q, 1.0)
    x = jnp.where(mx[:, None], x, 1.0)
    if normalize:
        q, x = _l2_normalize(q), _l2_normalize(x)
    # direct differences (no |a|²+|b|²−2ab cancellation): the shapes here are diagnostic-sized
    d2 = jnp.sum((q[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    d2 = jnp.where(mx[None, :], d2, jnp.inf)
    nn = jnp.min(d2, axis=1)
    nn = jnp.where(jnp.isinf(nn), 0.0, nn)  # no training row left
    d = nn if squared else _safe_sqrt(nn)
    d = jnp.where(jnp.isnan(nn), jnp.nan, d)
    total = jnp.sum(jnp.where(mq, d, 0.0))
    return (total / jnp.maximum(jnp.sum(mq), 1).astype(dtype)).astype(dtype)
