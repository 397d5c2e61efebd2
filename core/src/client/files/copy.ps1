# psremote: receive one file from the client and store it at a path on this host.
#
# Contract (kept stable: the client in core/src/client depends on it):
#   Arguments (positional): 0 = destination path [string], 1 = expand environment variables [bool].
#   Pipeline input, in order: zero or more data chunks, then exactly one final object.
#     data chunk   : [string] base64 of the next bytes of the file (a chunk may be empty)
#     final object : [string] base64 of the ASCII lowercase hex SHA-1 of the whole file,
#                    or the literal 'psremote:abort' when the client gives up.
#   Output: one [string], the absolute path the file was written to.
#   Progress: a record with Activity 'psremote:copy-ack' whose StatusDescription is the
#     decimal count of bytes written so far, every 2 MiB (the client's flow control).
#   Failure: a terminating error whose FullyQualifiedErrorId is 'PSRemote.File.<Kind>',
#     Kind one of NotFound, IsADirectory, ParentNotFound, AccessDenied, DiskFull, InUse,
#     InvalidPath, HashMismatch, Cancelled, Protocol, Io. The destination is never left
#     half-written: data goes to a temporary file beside it that is removed on failure.
#
# Compatible with Windows PowerShell 2.0 (.NET 2.0 APIs only) and 5.1.

param(
    [string] $Path,
    $ExpandVariables
)

begin {
    $ErrorActionPreference = 'Stop'
    $WarningPreference = 'Continue'
    # The acknowledgements are progress records; a preference inherited from the session
    # (profile, endpoint start-up script) must not swallow them.
    $ProgressPreference = 'Continue'

    $AckActivity = 'psremote:copy-ack'
    $AckEvery = [int64] 2097152
    $AbortMarker = 'psremote:abort'

    # --- helpers ----------------------------------------------------------------------------

    # An ErrorRecord the client maps by its id; thrown with `throw`.
    function New-TransferError([string] $Kind, [string] $Message, $Target, $Inner) {
        $category = [System.Management.Automation.ErrorCategory]::WriteError
        switch ($Kind) {
            'NotFound' { $category = [System.Management.Automation.ErrorCategory]::ObjectNotFound }
            'ParentNotFound' { $category = [System.Management.Automation.ErrorCategory]::ObjectNotFound }
            'IsADirectory' { $category = [System.Management.Automation.ErrorCategory]::InvalidArgument }
            'InvalidPath' { $category = [System.Management.Automation.ErrorCategory]::InvalidArgument }
            'AccessDenied' { $category = [System.Management.Automation.ErrorCategory]::PermissionDenied }
            'DiskFull' { $category = [System.Management.Automation.ErrorCategory]::ResourceUnavailable }
            'InUse' { $category = [System.Management.Automation.ErrorCategory]::ResourceBusy }
            'HashMismatch' { $category = [System.Management.Automation.ErrorCategory]::InvalidResult }
            'Cancelled' { $category = [System.Management.Automation.ErrorCategory]::OperationStopped }
            'Protocol' { $category = [System.Management.Automation.ErrorCategory]::InvalidData }
        }
        if ($null -ne $Inner) {
            $exception = New-Object -TypeName System.IO.IOException -ArgumentList @($Message, [System.Exception] $Inner)
        } else {
            $exception = New-Object -TypeName System.IO.IOException -ArgumentList $Message
        }
        New-Object -TypeName System.Management.Automation.ErrorRecord -ArgumentList @(
            $exception, ('PSRemote.File.' + $Kind), $category, $Target)
    }

    # The .NET exception behind PowerShell's wrappers ("Exception calling X with N argument(s)").
    function Get-InnermostException($Exception) {
        $current = $Exception
        while ($null -ne $current.InnerException -and
            $current -is [System.Management.Automation.RuntimeException]) {
            $current = $current.InnerException
        }
        $current
    }

    # Which Kind a .NET exception from a file operation stands for.
    function Get-ErrorKind($Exception) {
        if ($Exception -is [System.UnauthorizedAccessException]) { return 'AccessDenied' }
        if ($Exception -is [System.Security.SecurityException]) { return 'AccessDenied' }
        if ($Exception -is [System.IO.FileNotFoundException]) { return 'NotFound' }
        if ($Exception -is [System.IO.DirectoryNotFoundException]) { return 'ParentNotFound' }
        if ($Exception -is [System.IO.DriveNotFoundException]) { return 'ParentNotFound' }
        if ($Exception -is [System.IO.PathTooLongException]) { return 'InvalidPath' }
        if ($Exception -is [System.NotSupportedException]) { return 'InvalidPath' }
        if ($Exception -is [System.ArgumentException]) { return 'InvalidPath' }
        if ($Exception -is [System.FormatException]) { return 'Protocol' }
        if ($Exception -is [System.IO.IOException]) {
            # The Win32 error code sits in the low word of the HRESULT.
            $code = [System.Runtime.InteropServices.Marshal]::GetHRForException($Exception) -band 0xFFFF
            # ERROR_HANDLE_DISK_FULL, ERROR_DISK_FULL, ERROR_DISK_QUOTA_EXCEEDED
            if (@(39, 112, 1295) -contains $code) { return 'DiskFull' }
            # ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION
            if (@(32, 33) -contains $code) { return 'InUse' }
            if ($code -eq 5) { return 'AccessDenied' }
        }
        'Io'
    }

    # Rethrows our own records unchanged; turns anything else into one of Kind $Default or
    # of the Kind its exception stands for.
    function ConvertTo-TransferError($ErrorRecord, [string] $Action, [string] $Target) {
        if ([string] $ErrorRecord.FullyQualifiedErrorId -like 'PSRemote.File.*') {
            return $ErrorRecord
        }
        $inner = Get-InnermostException $ErrorRecord.Exception
        $kind = Get-ErrorKind $inner
        New-TransferError $kind ("Cannot {0} '{1}': {2}" -f $Action, $Target, $inner.Message) $Target $inner
    }

    # %NAME% (cmd style) and $env:NAME / ${env:NAME} (PowerShell style) from this process's
    # environment. Unknown names are left as written so the error names them.
    function Expand-PathVariables([string] $Text) {
        $expanded = [System.Environment]::ExpandEnvironmentVariables($Text)
        $pattern = '(?i)\$\{env:(?<name>[^}]+)\}|\$env:(?<name>[a-z0-9_]+)'
        $builder = New-Object -TypeName System.Text.StringBuilder
        $done = 0
        foreach ($match in [System.Text.RegularExpressions.Regex]::Matches($expanded, $pattern)) {
            [void] $builder.Append($expanded.Substring($done, $match.Index - $done))
            $value = [System.Environment]::GetEnvironmentVariable($match.Groups['name'].Value)
            if ($null -eq $value) {
                [void] $builder.Append($match.Value)
            } else {
                [void] $builder.Append($value)
            }
            $done = $match.Index + $match.Length
        }
        [void] $builder.Append($expanded.Substring($done))
        $builder.ToString()
    }

    # A path as the FileSystem provider sees it, relative paths taken from the current location.
    function Resolve-FileSystemPath([string] $Text) {
        if ([string]::IsNullOrEmpty($Text)) {
            throw (New-TransferError 'InvalidPath' 'The destination path is empty.' $Text $null)
        }
        $provider = $null
        $drive = $null
        try {
            $paths = $ExecutionContext.SessionState.Path
            $resolved = $paths.GetUnresolvedProviderPathFromPSPath($Text, [ref] $provider, [ref] $drive)
        } catch {
            throw (ConvertTo-TransferError $_ 'resolve' $Text)
        }
        if ($null -eq $provider -or $provider.Name -ne 'FileSystem') {
            throw (New-TransferError 'InvalidPath' ("The path '{0}' is not a file system path." -f $Text) $Text $null)
        }
        $resolved
    }

    # Windows PowerShell caps what one remote command may receive (the endpoint's
    # MaxReceivedCommandSizeMB, 50 MB by default), counting every input byte. A file is
    # streamed through one command, so lift that cap for this command only: the limit lives
    # on the command's transport manager, reachable through the pipeline's host. Internal
    # members are looked up by shape rather than by one exact name, as they differ between
    # versions. Returns $true when the cap was lifted (or was absent).
    function Remove-InputQuota {
        $flags = [System.Reflection.BindingFlags] 'Instance, NonPublic, Public'
        $remoteHost = $Host
        $property = $remoteHost.GetType().GetProperty('ExternalHost', $flags)
        if ($null -ne $property) { $remoteHost = $property.GetValue($remoteHost, $null) }

        $transport = $null
        $type = $remoteHost.GetType()
        while ($null -eq $transport -and $null -ne $type) {
            foreach ($field in $type.GetFields($flags)) {
                if ($field.FieldType.Name -like '*TransportManager') {
                    $transport = $field.GetValue($remoteHost)
                    if ($null -ne $transport) { break }
                }
            }
            $type = $type.BaseType
        }
        if ($null -eq $transport) { return $false }

        $fragmentor = $transport.GetType().GetProperty('Fragmentor', $flags).GetValue($transport, $null)
        $context = $fragmentor.GetType().GetProperty('DeserializationContext', $flags).GetValue($fragmentor, $null)
        $limit = $context.GetType().GetProperty('MaximumAllowedMemory', $flags)
        $limit.SetValue($context, $null, $null)
        $true
    }

    # --- set-up ---------------------------------------------------------------------------

    try {
        if (-not (Remove-InputQuota)) {
            Write-Warning 'psremote: could not find the input size limit of this command; large files may be refused.'
        }
    } catch {
        Write-Warning ('psremote: could not lift the input size limit of this command ({0}); large files may be refused.' -f $_.Exception.Message)
    }

    $target = $Path
    if ($ExpandVariables -eq $true) { $target = Expand-PathVariables $target }
    $destination = Resolve-FileSystemPath $target

    # Fail before any data arrives when the destination cannot be written.
    if ([System.IO.Directory]::Exists($destination)) {
        throw (New-TransferError 'IsADirectory' ("The destination '{0}' is a directory; give the path of a file." -f $destination) $destination $null)
    }
    $name = [System.IO.Path]::GetFileName($destination)
    $folder = [System.IO.Path]::GetDirectoryName($destination)
    if ([string]::IsNullOrEmpty($name) -or [string]::IsNullOrEmpty($folder)) {
        throw (New-TransferError 'InvalidPath' ("The destination '{0}' does not name a file." -f $destination) $destination $null)
    }
    if (-not [System.IO.Directory]::Exists($folder)) {
        throw (New-TransferError 'ParentNotFound' ("The folder '{0}' of the destination does not exist." -f $folder) $destination $null)
    }

    # The temporary file lives beside the destination: same volume (the final rename is
    # cheap and cannot run out of space) and the folder's inherited permissions.
    $temporary = [System.IO.Path]::Combine($folder, ('psremote-' + [System.Guid]::NewGuid().ToString('N').Substring(0, 16) + '.tmp'))
    try {
        $stream = New-Object -TypeName System.IO.FileStream -ArgumentList @(
            $temporary, [System.IO.FileMode]::CreateNew, [System.IO.FileAccess]::Write,
            [System.IO.FileShare]::None, 65536)
    } catch {
        throw (ConvertTo-TransferError $_ 'create a file in' $folder)
    }

    $sha1 = New-Object -TypeName System.Security.Cryptography.SHA1CryptoServiceProvider
    $written = [int64] 0
    $acknowledged = [int64] 0
    # Input is handled one object late: the last object is the hash, not data, and which
    # object is last is only known in the end block.
    $held = $null
    $failed = $false

    # Closes and removes the temporary file (idempotent).
    function Remove-Temporary {
        # Disposing twice is harmless, so the stream is not forgotten here.
        if ($null -ne $stream) {
            try { $stream.Dispose() } catch { }
        }
        if ([System.IO.File]::Exists($temporary)) {
            try { [System.IO.File]::Delete($temporary) } catch { }
        }
    }
} process {
    $item = $_
    $completed = $false
    try {
        if ($null -ne $held) {
            if ($held -is [byte[]]) {
                $bytes = $held
            } else {
                try {
                    $bytes = [System.Convert]::FromBase64String([string] $held)
                } catch {
                    throw (New-TransferError 'Protocol' 'An input chunk is not valid base64.' $destination $null)
                }
            }
            try {
                [void] $sha1.TransformBlock($bytes, 0, $bytes.Length, $bytes, 0)
                $stream.Write($bytes, 0, $bytes.Length)
            } catch {
                throw (ConvertTo-TransferError $_ 'write' $destination)
            }
            $written += $bytes.Length
            if ($written - $acknowledged -ge $AckEvery) {
                Write-Progress -Id 29811 -Activity $AckActivity -Status ([string] $written)
                $acknowledged = $written
            }
        }
        $held = $item
        $completed = $true
    } finally {
        # Also reached when the client stops the pipeline while this block runs.
        if (-not $completed) {
            $failed = $true
            Remove-Temporary
        }
    }
} end {
    try {
        if ($failed) { return }
        if ($null -eq $held) {
            throw (New-TransferError 'Protocol' 'No input was received: the file hash is missing.' $destination $null)
        }
        if ([string] $held -eq $AbortMarker) {
            throw (New-TransferError 'Cancelled' 'The client cancelled the copy.' $destination $null)
        }
        try {
            $expected = [System.Text.Encoding]::ASCII.GetString([System.Convert]::FromBase64String([string] $held)).ToLowerInvariant()
        } catch {
            $expected = ''
        }
        if ($expected -notmatch '^[0-9a-f]{40}$') {
            throw (New-TransferError 'Protocol' 'The last input is not the SHA-1 of the file.' $destination $null)
        }

        try {
            # Flushing may be where a full disk shows.
            $stream.Flush()
            $stream.Close()
        } catch {
            throw (ConvertTo-TransferError $_ 'write' $destination)
        }
        [void] $sha1.TransformFinalBlock((New-Object -TypeName byte[] -ArgumentList 0), 0, 0)
        $actual = [System.BitConverter]::ToString($sha1.Hash).Replace('-', '').ToLowerInvariant()
        if ($actual -ne $expected) {
            $message = "The copied data does not match the client's file: hash mismatch`r`nActual: {0}`r`nExpected: {1}" -f $actual, $expected
            throw (New-TransferError 'HashMismatch' $message $destination $null)
        }

        # Put the file in place, replacing an existing one. File.Replace swaps the files in one
        # step and keeps the replaced file's attributes and permissions. It is given a backup
        # name (PowerShell 2.0 cannot pass a null string to .NET: $null becomes '') that is
        # removed afterwards. Where Replace is not supported (other file systems, some shares),
        # delete and rename instead.
        try {
            if ([System.IO.File]::Exists($destination)) {
                $backup = $temporary + '.old'
                try {
                    [System.IO.File]::Replace($temporary, $destination, $backup, $true)
                } catch {
                    [System.IO.File]::Delete($destination)
                    [System.IO.File]::Move($temporary, $destination)
                }
                if ([System.IO.File]::Exists($backup)) {
                    try { [System.IO.File]::Delete($backup) } catch { }
                }
            } else {
                [System.IO.File]::Move($temporary, $destination)
            }
        } catch {
            throw (ConvertTo-TransferError $_ 'replace' $destination)
        }
        Write-Output $destination
    } finally {
        Remove-Temporary
    }
}
