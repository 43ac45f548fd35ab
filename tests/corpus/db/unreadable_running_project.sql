-- A running task of this node whose project names no dir: no project can be told apart from
-- its, so task state is unknown (everything protected, and `sessions` says why).
INSERT INTO tasks (id, project, status, started_at, node, pid) VALUES
  ('abs-running', '/etc', 'running', '2026-02-20 10:00:00', 'node-a', NULL);
