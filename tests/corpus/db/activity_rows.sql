-- Scratch activity rows with every kind of name and time.
INSERT INTO turns (session, at) VALUES
  ('sess-a', '2026-02-20 10:00:00'),
  ('sess-a', 1e15),
  ('sess-a', 'yesterday'),
  (NULL, '2026-02-20 10:00:00'),
  (X'FF00', 1771581600),
  (CAST(X'736573732DFF' AS TEXT), 1771581600000),
  ('sess-b', -1e999),
  ('sess-b', NULL),
  ('a/b', 1771581600),
  (3.5, 1771581600),
  (printf('%.*c', 100000, 's'), 1771581600);
