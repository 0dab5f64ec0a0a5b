"""Linkage quality against a known truth (test data, benchmark, a validated sample)."""

from __future__ import annotations

import duckdb


def quality_against_truth(links_glob: str, truth_parquet: str) -> dict[str, float | int]:
    """Precision, recall and F1 of the links, plus the many-to-one count (must be 0).

    The truth has one row per cohort record (``hdh_provider``, ``coh_rec_id``, ``true_ben_idt_ano``),
    NULL when the record has no true match among the linkable persons.
    """
    with duckdb.connect() as connection:
        row = connection.execute(
            """
            WITH links AS (SELECT * FROM read_parquet($links)),
                 truth AS (SELECT * FROM read_parquet($truth))
            SELECT
                (SELECT count(*) FROM links) AS links,
                (SELECT count(*) FROM links l JOIN truth t USING (hdh_provider, coh_rec_id)
                 WHERE l.ben_idt_ano = t.true_ben_idt_ano) AS correct,
                (SELECT count(*) FROM truth WHERE true_ben_idt_ano IS NOT NULL) AS true_matches,
                (SELECT count(*) FROM (SELECT ben_idt_ano FROM links GROUP BY 1 HAVING count(*) > 1))
                    AS persons_linked_twice,
                (SELECT count(*) FROM (SELECT hdh_provider, coh_rec_id FROM links
                                       GROUP BY ALL HAVING count(*) > 1))
                    AS records_linked_twice
            """,
            {"links": links_glob, "truth": truth_parquet},
        ).fetchall()[0]
    links, correct, true_matches, persons_twice, records_twice = row
    precision = correct / links if links else 1.0
    recall = correct / true_matches if true_matches else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "links": links,
        "correct_links": correct,
        "true_matches": true_matches,
        "persons_linked_twice": persons_twice,
        "records_linked_twice": records_twice,
    }
