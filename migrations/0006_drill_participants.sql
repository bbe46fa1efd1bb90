-- Who took part in a drill: one row per person, instead of a JSON array in
-- drills.participants (which could not be indexed or checked by a foreign key).
CREATE TABLE drill_participants (
    drill_id     TEXT NOT NULL REFERENCES drills (id),
    custodian_id TEXT NOT NULL REFERENCES custodians (id),
    PRIMARY KEY (drill_id, custodian_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX drill_participants_by_custodian ON drill_participants (custodian_id);

INSERT INTO drill_participants (drill_id, custodian_id)
    SELECT d.id, j.value FROM drills AS d, json_each(d.participants) AS j
    WHERE d.participants IS NOT NULL AND json_valid(d.participants);

ALTER TABLE drills DROP COLUMN participants;
