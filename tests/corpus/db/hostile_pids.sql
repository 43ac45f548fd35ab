-- pid values that are no process id, all on long-running tasks (ghost candidates).
INSERT INTO tasks (id, project, status, started_at, node, pid) VALUES
  ('pid-2^40',   'beta', 'running', 1, 'node-a', 1099511627776),
  ('pid-neg',    'beta', 'running', 1, 'node-a', -5),
  ('pid-zero',   'beta', 'running', 1, 'node-a', 0),
  ('pid-one',    'beta', 'running', 1, 'node-a', 1),
  ('pid-real',   'beta', 'running', 1, 'node-a', 3.5),
  ('pid-bigreal','beta', 'running', 1, 'node-a', 9.3e18),
  ('pid-text',   'beta', 'running', 1, 'node-a', 'abc'),
  ('pid-blob',   'beta', 'running', 1, 'node-a', X'0001'),
  ('pid-max',    'beta', 'running', 1, 'node-a', 9223372036854775807),
  ('pid-null',   'beta', 'running', 1, 'node-a', NULL),
  ('pid-i32max', 'beta', 'running', 1, 'node-a', 2147483647);
