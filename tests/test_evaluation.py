import numpy as np

from vpr_core.evaluation.recall import evaluate_descriptors, recall_at_n


def brute_force_recall(predictions, positives, ns):
    """The reference's loop: a query counts at N when one of its first N is a positive."""
    correct = np.zeros(len(ns))
    for q, pred in enumerate(predictions):
        for i, n in enumerate(ns):
            if any(p in set(positives[q].tolist()) for p in pred[:n]):
                correct[i:] += 1
                break
    return {n: c / len(predictions) for n, c in zip(ns, correct)}


def test_recall_equals_a_brute_force_count():
    rng = np.random.default_rng(0)
    num_db, num_q = 60, 200
    predictions = np.stack([rng.permutation(num_db)[:20] for _ in range(num_q)])
    positives = [rng.choice(num_db, size=rng.integers(0, 4), replace=False) for _ in range(num_q)]
    ours = recall_at_n(predictions, positives, (1, 5, 10, 20))
    expected = brute_force_recall(predictions, positives, (1, 5, 10, 20))
    assert ours == expected
    assert 0 < ours[1] < ours[20] < 1  # the case is not degenerate


def test_queries_without_positives_stay_in_the_denominator():
    predictions = np.array([[0, 1], [1, 0]])
    assert recall_at_n(predictions, [np.array([0]), np.array([], dtype=np.int64)], (1, 2)) == \
        {1: 0.5, 2: 0.5}


def test_faiss_padding_of_a_small_database_is_never_a_hit():
    predictions = np.array([[2, -1, -1]])
    assert recall_at_n(predictions, [np.array([0])], (1, 3)) == {1: 0.0, 3: 0.0}


def test_search_ranks_by_l2_distance():
    database = np.eye(4, dtype=np.float32)
    queries = np.array([[0.9, 0.1, 0, 0], [0, 0, 0.2, 0.8]], dtype=np.float32)
    recalls, predictions, distances = evaluate_descriptors(
        database, queries, [np.array([0]), np.array([2])], ns=(1, 2))
    assert predictions.tolist() == [[0, 1], [3, 2]]
    assert np.all(np.diff(distances, axis=1) >= 0)
    assert recalls == {1: 0.5, 2: 1.0}
