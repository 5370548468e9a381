import hashlib

from fourview.data.splits import EVAL_FRACTION, EVAL_SALT, is_evaluation_object, split_names


def test_the_rule_is_the_documented_hash():
    for name in ("Threshold_Porcelain_Teapot_White", "a", "Pokémon_Omega_Ruby"):
        value = int.from_bytes(hashlib.sha256(f"{EVAL_SALT}:{name}".encode()).digest()[:8], "big") / 2**64
        assert is_evaluation_object(name) == (value < EVAL_FRACTION)


def test_split_partitions_names_at_about_the_fraction():
    names = [f"object_{i:04d}" for i in range(2000)]
    train, evaluation = split_names(names + names[:10])  # duplicates count once
    assert sorted(train + evaluation) == sorted(names)
    assert not set(train) & set(evaluation)
    assert abs(len(evaluation) / len(names) - EVAL_FRACTION) < 0.03
