"""Splitting the deduplication query's ids so each parameter stays small."""

from services.metering.store import MAX_PARAM_BYTES, id_chunks


def test_few_ids_stay_in_one_chunk():
    assert id_chunks(["a", "b"]) == [["a", "b"]]


def test_no_chunk_exceeds_the_parameter_budget_and_nothing_is_lost():
    ids = [f"{n:0200d}" for n in range(2000)]  # 2000 ids of 200 characters: ~400 KB
    chunks = id_chunks(ids)
    assert len(chunks) > 1
    assert [txn for chunk in chunks for txn in chunk] == ids
    assert all(sum(len(t) + 4 for t in chunk) <= MAX_PARAM_BYTES for chunk in chunks)


def test_multibyte_ids_count_their_encoded_size():
    ids = ["é" * 100] * 400  # 200 bytes each
    assert all(sum(len(t.encode()) + 4 for t in chunk) <= MAX_PARAM_BYTES for chunk in id_chunks(ids))


def test_no_ids_make_one_empty_chunk():
    assert id_chunks([]) == [[]]
