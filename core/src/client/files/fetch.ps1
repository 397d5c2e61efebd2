# psremote: send one file of this host to the client, in chunks.
#
# Contract (kept stable: the client in core/src/client depends on it):
#   Arguments (positional): 0 = source path [string], 1 = expand environment variables [bool].
#   No pipeline input.
#   Output, in order: zero or more data chunks, then exactly one hash.
#     data chunk : [string] base64 of the next bytes of the file (at most 128 KiB of bytes)
#     hash       : [string] the lowercase hex SHA-1 (40 characters) of all the bytes sent
#   The client knows the hash by position: it is the last output object. The file is read
#   and sent a chunk at a time; nothing bigger than one chunk is held in memory here.
#   Progress: before the data, one record with Activity 'psremote:fetch-size' whose
#     StatusDescription is the file's length in bytes (for the client's progress bar only).
#   Failure: a terminating error whose FullyQualifiedErrorId is 'PSRemote.File.<Kind>',
#     Kind one of NotFound, IsADirectory, AccessDenied, InUse, InvalidPath, Io.
#
# Compatible with Windows PowerShell 2.0 (.NET 2.0 APIs only) and 5.1.

param(
    [string] $Path,
    $ExpandVariables
)

$ErrorActionPreference = 'Stop'
# The size announcement is a progress record; a preference inherited from the session must
# not swallow it.
$ProgressPreference = 'Continue'
$ChunkSize = 131072

# --- helpers --------------------------------------------------------------------------------

# An ErrorRecord the client maps by its id; thrown with `throw`.
function New-TransferError([string] $Kind, [string] $Message, $Target, $Inner) {
    $category = [System.Management.Automation.ErrorCategory]::ReadError
    switch ($Kind) {
        'NotFound' { $category = [System.Management.Automation.ErrorCategory]::ObjectNotFound }
        'IsADirectory' { $category = [System.Management.Automation.ErrorCategory]::InvalidArgument }
        'InvalidPath' { $category = [System.Management.Automation.ErrorCategory]::InvalidArgument }
        'AccessDenied' { $category = [System.Management.Automation.ErrorCategory]::PermissionDenied }
        'InUse' { $category = [System.Management.Automation.ErrorCategory]::ResourceBusy }
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
    if ($Exception -is [System.IO.DirectoryNotFoundException]) { return 'NotFound' }
    if ($Exception -is [System.IO.DriveNotFoundException]) { return 'NotFound' }
    if ($Exception -is [System.IO.PathTooLongException]) { return 'InvalidPath' }
    if ($Exception -is [System.NotSupportedException]) { return 'InvalidPath' }
    if ($Exception -is [System.ArgumentException]) { return 'InvalidPath' }
    if ($Exception -is [System.IO.IOException]) {
        # The Win32 error code sits in the low word of the HRESULT.
        $code = [System.Runtime.InteropServices.Marshal]::GetHRForException($Exception) -band 0xFFFF
        # ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION
        if (@(32, 33) -contains $code) { return 'InUse' }
        if ($code -eq 5) { return 'AccessDenied' }
    }
    'Io'
}

# Rethrows our own records unchanged; turns anything else into the Kind its exception
# stands for.
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
        throw (New-TransferError 'InvalidPath' 'The source path is empty.' $Text $null)
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

# --- the transfer ---------------------------------------------------------------------------

$source = $Path
if ($ExpandVariables -eq $true) { $source = Expand-PathVariables $source }
$source = Resolve-FileSystemPath $source

if ([System.IO.Directory]::Exists($source)) {
    throw (New-TransferError 'IsADirectory' ("The source '{0}' is a directory; give the path of a file." -f $source) $source $null)
}

try {
    # Others may keep writing or even delete the file meanwhile (a log, say): the hash covers
    # exactly the bytes sent, so what arrives is still checked end to end.
    $share = [System.IO.FileShare] 'ReadWrite, Delete'
    $stream = New-Object -TypeName System.IO.FileStream -ArgumentList @(
        $source, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Read, $share, 65536)
} catch {
    $failure = ConvertTo-TransferError $_ 'open' $source
    if ($failure.FullyQualifiedErrorId -eq 'PSRemote.File.NotFound') {
        $failure = New-TransferError 'NotFound' ("The source '{0}' does not exist." -f $source) $source $null
    }
    throw $failure
}

Write-Progress -Id 29812 -Activity 'psremote:fetch-size' -Status ([string] $stream.Length)

$sha1 = New-Object -TypeName System.Security.Cryptography.SHA1CryptoServiceProvider
$buffer = New-Object -TypeName byte[] -ArgumentList $ChunkSize
try {
    while ($true) {
        # Fill the buffer (a read may return less than asked before the end of the file), so
        # every chunk but the last is exactly $ChunkSize bytes.
        $filled = 0
        while ($filled -lt $ChunkSize) {
            try {
                $read = $stream.Read($buffer, $filled, $ChunkSize - $filled)
            } catch {
                throw (ConvertTo-TransferError $_ 'read' $source)
            }
            if ($read -le 0) { break }
            $filled += $read
        }
        if ($filled -eq 0) { break }
        [void] $sha1.TransformBlock($buffer, 0, $filled, $buffer, 0)
        # Handed to the transport as soon as it is read; nothing accumulates in this script.
        Write-Output ([System.Convert]::ToBase64String($buffer, 0, $filled))
        if ($filled -lt $ChunkSize) { break }
    }
} finally {
    $stream.Dispose()
}

[void] $sha1.TransformFinalBlock((New-Object -TypeName byte[] -ArgumentList 0), 0, 0)
Write-Output ([System.BitConverter]::ToString($sha1.Hash).Replace('-', '').ToLowerInvariant())
