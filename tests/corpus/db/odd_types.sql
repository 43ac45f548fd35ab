-- Every column holding every storage class, and text that is not UTF-8.
INSERT INTO tasks (id, project, status, started_at, node, pid) VALUES
  (NULL,            'gamma', 'running', '2026-02-20 10:00:00', 'node-a', NULL),
  (X'DEADBEEF',     'gamma', 'running', '2026-02-20 10:00:00', 'node-a', NULL),
  (3.25,            'gamma', 'running', '2026-02-20 10:00:00', 'node-a', NULL),
  (CAST(X'FF' AS TEXT), CAST(X'626164FF' AS TEXT), 'running', '2026-02-20 10:00:00', 'node-a', NULL),
  ('blob-project',  X'626C6F62', 'running', '2026-02-20 10:00:00', 'node-a', NULL),
  ('int-project',   42, 'running', '2026-02-20 10:00:00', 'node-a', NULL),
  ('blob-started',  'gamma', 'running', X'00FF', 'node-a', NULL),
  ('bad-node',      'gamma', 'running', '2026-02-20 10:00:00', CAST(X'6E6F64652D61FF' AS TEXT), NULL),
  ('int-node',      'gamma', 'running', '2026-02-20 10:00:00', 7, NULL),
  ('nul-project',   CAST(X'610062' AS TEXT), 'done', 1, 'node-a', NULL),
  ('abs-project',   '/etc', 'done', 1, 'node-a', NULL),
  ('dotdot',        '..', 'done', 1, 'node-a', NULL),
  ('utf8-text-time', 'gamma', 'done', CAST(X'323032362D30322D3230FF' AS TEXT), 'node-a', NULL);
