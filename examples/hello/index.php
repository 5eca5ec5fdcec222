<?php
// The example tenant: proves the request went through tenantfpm's php-cgi worker.
header('Content-Type: text/plain');
printf("Hello from tenant %s: PHP %s, pid %d, uid %d\n",
       getenv('TENANT') ?: '?', PHP_VERSION, getmypid(), posix_getuid());
