-- Two members for the tests, with precomputed hashes (as Flask's tutorial ships them): hashing
-- a password takes real CPU and proves nothing here. Passwords: alice-pass, bob-pass.
INSERT INTO user (username, password) VALUES
  ('alice', 'scrypt:32768:8:1$bf2y06L5n9lZET9A$475e53a0407bb16d7d6293f29fb7c55165d14e6933748e5efff0dc5acff4161a76ff8260cd993699b7c527119cd7142c914422e3fd892da8e1efd1f7c03f25cf'),
  ('bob', 'scrypt:32768:8:1$NUBs3Rq9ujzWljeM$b6deef00ffce3505843a3dc1f0588d581dec5e36a51afeee67abd1a3aaad6f8dead90bf7588b7c300d444cfd0eb94ea9d6db590de743c2bc5841ab4543a72500');
