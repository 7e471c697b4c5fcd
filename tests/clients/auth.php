<?php
// memcached's ASCII authentication with PHP's memcache extension: the
// first request is a set whose value is "user password".
// Usage: php auth.php PORT USER PASSWORD
[$port, $user, $password] = [(int)$argv[1], $argv[2], $argv[3]];
function check($what, $got, $want) {
    if ($got !== $want) {
        fwrite(STDERR, "FAIL $what: got " . var_export($got, true) . ", want " . var_export($want, true) . "\n");
        exit(1);
    }
}
$wrong = memcache_connect('127.0.0.1', $port);
check('connect', $wrong !== false, true);
check('wrong password refused', @memcache_set($wrong, 'auth', "$user x$password", 0, 0), false);
$mc = memcache_connect('127.0.0.1', $port);
check('authenticated', memcache_set($mc, 'auth', "$user $password", 0, 0), true);
check('set', memcache_set($mc, 'phpauth', 'hello', 0, 0), true);
check('get', memcache_get($mc, 'phpauth'), 'hello');
echo "session ok\n";
