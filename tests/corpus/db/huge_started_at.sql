-- started_at values past every calendar: the 1e15 that crashed run, run --once and sessions.
INSERT INTO tasks (id, project, status, started_at, node, pid) VALUES
  ('big-int',   'alpha', 'running', 1000000000000000, 'node-a', 4000000),
  ('big-real',  'alpha', 'running', 1e15,             'node-a', 4000001),
  ('big-text',  'alpha', 'running', '1000000000000000', 'node-a', 4000002),
  ('max-int',   'alpha', 'running', 9223372036854775807, 'node-a', 4000003),
  ('min-int',   'alpha', 'running', -9223372036854775808, 'node-a', 4000004),
  ('inf',       'alpha', 'running', 1e999,            'node-a', 4000005),
  ('neg-inf',   'alpha', 'running', -1e999,           'node-a', 4000006),
  ('huge-real', 'alpha', 'running', 1.7976931348623157e308, 'node-a', 4000007),
  ('year-10k',  'alpha', 'running', '10000-01-01T00:00:00Z', 'node-a', 4000008),
  ('year-0',    'alpha', 'running', '0000-01-01 00:00:00', 'node-a', 4000009),
  ('leap-sec',  'alpha', 'running', '2026-06-30T23:59:60Z', 'node-a', 4000010),
  ('digits',    'alpha', 'running', '99999999999999999999999999999999999999', 'node-a', 4000011),
  ('dots',      'alpha', 'running', '1.2.3.4', 'node-a', 4000012),
  ('negative',  'alpha', 'running', -1, 'node-a', 4000013);
