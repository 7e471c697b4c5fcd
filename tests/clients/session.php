<?php
// The MemcacheQ documentation's own example, with PHP's memcache extension:
// memcache_connect, memcache_set, memcache_get. Usage: php session.php PORT
$port = (int)$argv[1];
function check($what, $got, $want) {
    if ($got !== $want) {
        fwrite(STDERR, "FAIL $what: got " . var_export($got, true) . ", want " . var_export($want, true) . "\n");
        exit(1);
    }
}
$mc = memcache_connect('127.0.0.1', $port);
check('connect', $mc !== false, true);
check('set hello', memcache_set($mc, 'demoqueue1', 'hello', 0, 0), true);
check('set world', memcache_set($mc, 'demoqueue1', 'world', 0, 0), true);
// (php-memcache refuses the stats type "queue", so `stats queue` is
// checked through the other clients.)
$stats = memcache_get_stats($mc);
check('stats curr_items', (int)$stats['curr_items'] >= 2, true);
check('get 1', memcache_get($mc, 'demoqueue1'), 'hello');
check('get 2', memcache_get($mc, 'demoqueue1'), 'world');
check('get empty', memcache_get($mc, 'demoqueue1'), false);
// Binary-safe bodies, and many messages in FIFO order.
$body = "line1\r\nEND\r\n\0tail";
check('set binary', memcache_set($mc, 'binq', $body, 0, 0), true);
check('get binary', memcache_get($mc, 'binq'), $body);
for ($i = 0; $i < 100; $i++) { memcache_set($mc, 'many', "m$i", 0, 0); }
for ($i = 0; $i < 100; $i++) { check("get m$i", memcache_get($mc, 'many'), "m$i"); }
check('delete', memcache_delete($mc, 'demoqueue1'), true);
memcache_close($mc);
echo "php memcache session ok\n";
