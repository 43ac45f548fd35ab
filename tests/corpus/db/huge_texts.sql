-- Values far longer than any name or timestamp (on finished tasks: they protect nothing).
INSERT INTO tasks (id, project, status, started_at, node, pid) VALUES
  (printf('%.*c', 200000, 'i'), printf('%.*c', 200000, 'p'), 'done',
   printf('%.*c', 200000, '7'), printf('%.*c', 200000, 'n'), printf('%.*c', 100000, '9')),
  ('long-blob-id', 'delta', 'done', zeroblob(100000), 'node-a', randomblob(5000));
