"""Design implementations. Import designs through `memcryptor_lab`, not from here."""
